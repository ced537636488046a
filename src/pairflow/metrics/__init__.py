"""Sample-quality metrics for digit pairs, computed in the pair classifier's feature space.

- :func:`frechet_distance`: Fréchet distance of feature Gaussians (the analogue of FID);
- :func:`inception_score` with :func:`pair_probabilities`: the classifier's 100-way score;
- :func:`precision_recall`: k-NN precision and recall (Kynkäänniemi et al., 2019);
- :func:`class_coverage`, :func:`kl_to_uniform`, :func:`class_histogram`: spread over the
  100 pair classes;
- :func:`conditional_accuracy`: for conditional models, how often the requested pair is drawn;
- :func:`evaluate_samples`, :func:`real_vs_real_floor`: all of the above in one dict, and the
  same numbers for real data against real data, so every metric has a scale.

No metric drops NaN samples: a diverged model gets NaN (or a clear error), never a flattering
number computed on the finite rest.
"""

from pairflow.metrics.conditional import ConditionalAccuracy, conditional_accuracy
from pairflow.metrics.coverage import class_coverage, class_histogram, kl_to_uniform
from pairflow.metrics.evaluate import evaluate_samples, real_pairs, real_vs_real_floor
from pairflow.metrics.frechet import frechet_distance
from pairflow.metrics.inception_score import inception_score, pair_probabilities
from pairflow.metrics.precision_recall import precision_recall

__all__ = [
    "ConditionalAccuracy",
    "class_coverage",
    "class_histogram",
    "conditional_accuracy",
    "evaluate_samples",
    "frechet_distance",
    "inception_score",
    "kl_to_uniform",
    "pair_probabilities",
    "precision_recall",
    "real_pairs",
    "real_vs_real_floor",
]
