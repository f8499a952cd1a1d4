"""The public face: every task class, and `TASKS` (domain name -> class), filled by importing them."""

from suite.core.optim import TrainingConfig
from suite.core.task import TASKS, Task
from suite.forecasting.task import Forecaster
from suite.recommendation.task import Recommender
from suite.text.classifier import TextClassifier
from suite.text.masked_lm import MaskedLMPretrainer
from suite.text.sentence_encoder import SentenceEncoder
from suite.translation.task import Translator
from suite.vision.task import ImageClassifier

__all__ = [
    "TASKS",
    "Forecaster",
    "ImageClassifier",
    "MaskedLMPretrainer",
    "Recommender",
    "SentenceEncoder",
    "Task",
    "TextClassifier",
    "TrainingConfig",
    "Translator",
]
