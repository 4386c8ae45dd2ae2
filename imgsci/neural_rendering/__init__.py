"""Neural rendering study: shared `scenes` and `shading`, and the methods `nerf`, `nerd` and `physg` on Mitsuba-rendered scenes."""
