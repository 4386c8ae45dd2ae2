"""Tumour counterfactuals (Wang & Thomson): IMC cohorts and T-cell classifiers (`imc`), counterfactual therapies (`counterfactuals`)."""
