"""Networks: the VQVAE autoencoder and the flow vector-field transformer."""
