"""One task per domain; importing this package registers them all in `TASKS`."""

from suite.tasks.base import TASKS, Task, TrainingConfig
from suite.tasks.forecasting import Forecaster
from suite.tasks.image_classification import ImageClassifier
from suite.tasks.masked_lm import MaskedLMPretrainer
from suite.tasks.recommendation import Recommender
from suite.tasks.sentence_encoder import SentenceEncoder
from suite.tasks.text_classification import TextClassifier
from suite.tasks.translation import Translator

__all__ = ["TASKS", "Forecaster", "ImageClassifier", "MaskedLMPretrainer", "Recommender", "SentenceEncoder", "Task", "TextClassifier", "TrainingConfig", "Translator"]
