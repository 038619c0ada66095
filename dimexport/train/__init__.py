"""Training: datasets, recipes and the loop (`dimexport train`)."""
