"""Text: WordPiece preprocessing, the text encoder, classification, masked-LM pretraining, pretrained BERT checkpoints and sentence vectors."""
