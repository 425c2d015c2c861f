"""Single-person pose estimation after Tompson, Jain, LeCun & Bregler (NIPS 2014): a multi-resolution convolutional
part detector and a convolutional MRF spatial model, trained in stages on the shared ``cvcore`` engine.

    from pose import PoseEstimator
    est = PoseEstimator.load("lspet")          # shipped model, or a path to a model file
    joints = est.predict(image)                # float32[K, 3]: x, y, score in image pixels

    from pose import TopDown
    people = TopDown.load("person", "lspet").predict(image)   # R-CNN person detector, then one pose per person
"""

from pose.estimator import PoseEstimator
from pose.topdown import Person, TopDown

__all__ = ["PoseEstimator", "TopDown", "Person"]
