// Images to 8-bit pixels by the portable spec (manifest / hart.portable.spec IMAGE_8BIT):
// pixel = round_half_to_even(clip(x, 0, 1) * 255) computed in float32. Math.round alone would round
// halves up (2.5 -> 3 where Python gives 2), so halves that land on an odd number step down.

export function to8bit(x) {
  const v = Math.fround(Math.min(1, Math.max(0, x)) * 255); // the exact product, rounded once to float32
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 === 1 ? r - 1 : r;
}

// A [1, 3, H, W] float tensor ({ dims, data }) -> { width, height, pixels } with pixels RGBA
// (Uint8ClampedArray, alpha 255), ready for `new ImageData(pixels, width, height)`.
export function toRGBA(tensor) {
  const [, channels, height, width] = tensor.dims, data = tensor.data, plane = width * height;
  if (channels !== 3) throw new Error(`expected an RGB image, got ${channels} channels`);
  const pixels = new Uint8ClampedArray(4 * plane);
  for (let i = 0; i < plane; i++) {
    pixels[4 * i] = to8bit(data[i]);
    pixels[4 * i + 1] = to8bit(data[plane + i]);
    pixels[4 * i + 2] = to8bit(data[2 * plane + i]);
    pixels[4 * i + 3] = 255;
  }
  return { width, height, pixels };
}
