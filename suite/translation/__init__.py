"""Machine translation: parallel text, the encoder-decoder model, greedy and beam decoding."""
