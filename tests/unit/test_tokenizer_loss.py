"""The tokenizer's pixel weights: objects weigh FOREGROUND_WEIGHT, the background near them the halo weight."""

import numpy as np
import torch

from hart.data.scenes import Scene, SceneObject, image_array
from hart.train.tokenizer import FOREGROUND_WEIGHT, HALO_PIXELS, pixel_weights, reconstruction_loss


def _scene() -> torch.Tensor:
    scene = Scene("blue", (SceneObject("square", "red", "small", "center"),), "")
    return torch.from_numpy(image_array(scene, 64))[None]


def test_objects_their_halo_and_the_far_background_get_their_weights():
    images = _scene()
    weights = pixel_weights(images, halo_weight=4.0)[0, 0]
    assert weights[32, 32] == FOREGROUND_WEIGHT and weights[0, 0] == 1.0
    row = weights[32].numpy()
    edge = int(np.argmax(row == FOREGROUND_WEIGHT))  # the square's left edge on the middle row
    assert (row[edge - HALO_PIXELS:edge] == 4.0).all() and row[edge - HALO_PIXELS - 1] == 1.0
    assert torch.equal(pixel_weights(images)[0, 0], torch.where(weights == FOREGROUND_WEIGHT, weights, torch.ones(())))


def test_a_ghost_near_an_object_costs_more_with_a_halo_weight():
    images = _scene()
    target = images * 2 - 1
    ghost = target.clone()
    ghost[..., 32, 21:25] += 0.2  # a faint mark 2-5 px left of the square
    far = target.clone()
    far[..., 32, 1:5] += 0.2  # the same mark far from it
    assert reconstruction_loss(ghost, images) == reconstruction_loss(far, images)
    assert reconstruction_loss(ghost, images, 4.0) > 2 * reconstruction_loss(far, images, 4.0)
