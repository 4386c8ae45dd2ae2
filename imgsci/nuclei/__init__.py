"""Nuclei segmentation study: synthetic and DSB2018 data (`data`), MultiResUNet/U-Net training and scoring (`segmentation`)."""
