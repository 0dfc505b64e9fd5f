"""Reading the images and masks an edit starts from, and fitting them to the model's square canvas.

Outpainting places the image, resized to the canvas less the margins, inside them (place_on_canvas).

The rule for an image of another size: the largest centred square is cut out of it and resized to the
canvas with Lanczos; a mask follows the same crop and is resized bilinearly before its 0.5 threshold, so
it marks the same region. A box is given in the input image's own pixels.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hart.errors import ConfigError, HartError
from hart.portable.edit import binary_mask, box_mask


def read_image(path: str | Path, what: str = "image") -> Image.Image:
    """A file Pillow can read, fully loaded; anything else is one sentence naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise HartError(f"{path} does not exist; expected the {what} file") from None
    except (IsADirectoryError, UnidentifiedImageError, OSError, ValueError) as err:
        detail = "a folder" if Path(path).is_dir() else f"not an image Pillow can read ({type(err).__name__})"
        raise HartError(f"{path} is {detail}; expected the {what} (PNG, JPEG or WebP)") from None


def _square(image: Image.Image) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def fit_image(image: Image.Image, size: int) -> np.ndarray:
    """-> [size, size, 3] float32 in [0, 1]: the centred square, resized with Lanczos."""
    square = _square(image.convert("RGB"))
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.float32) / np.float32(255)


def fit_mask(mask: Image.Image | np.ndarray, image_size: tuple[int, int], size: int) -> np.ndarray:
    """A white-on-black mask of the input image's size -> [size, size] bool (True = edit), after the image's
    crop and resize. A mask of another size than the image is refused: it could mark any region."""
    values = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask)
    if values.ndim == 2 and values.dtype == bool:
        values = values.astype(np.uint8) * 255
    binary = binary_mask(values, (image_size[1], image_size[0]))
    square = _square(Image.fromarray(binary.astype(np.uint8) * 255))
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.uint8) >= 128


def fit_box(box: tuple[int, int, int, int], image_size: tuple[int, int], size: int) -> np.ndarray:
    """A box X0,Y0,X1,Y1 in the input image's pixels -> [size, size] bool, as fit_mask."""
    return fit_mask(box_mask(box, (image_size[1], image_size[0])), image_size, size)


def place_on_canvas(image: Image.Image, size: int, left: int, right: int, top: int,
                    bottom: int) -> tuple[np.ndarray, np.ndarray]:
    """Outpainting within the canvas: the image, resized with Lanczos to the canvas less the margins (canvas
    pixels), is placed inside them; -> pixels [size, size, 3] and the mask [size, size] of the margins."""
    margins = {"--left": left, "--right": right, "--top": top, "--bottom": bottom}
    negative = [name for name, value in margins.items() if value < 0]
    if negative:
        raise ConfigError(f"{', '.join(negative)} must be 0 or more pixels")
    width, height = size - left - right, size - top - bottom
    if width < 1 or height < 1:
        raise ConfigError(f"the margins leave no room for the image on the {size}x{size} canvas (left + right and "
                          f"top + bottom must be below {size}); to extend past the trained size, keep the image's "
                          "size and ask for a canvas with --to WxH")
    if not any(margins.values()):
        raise ConfigError("outpainting needs at least one of --left, --right, --top, --bottom above 0")
    pixels = np.zeros((size, size, 3), dtype=np.float32)
    placed = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    pixels[top:top + height, left:left + width] = np.asarray(placed, dtype=np.float32) / np.float32(255)
    mask = np.ones((size, size), dtype=bool)
    mask[top:top + height, left:left + width] = False
    return pixels, mask


def parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--box {text!r} must be four whole numbers X0,Y0,X1,Y1 (pixels of the input image)") \
            from None
    return x0, y0, x1, y1
