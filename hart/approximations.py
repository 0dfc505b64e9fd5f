"""Opt-in approximations: work HART does that a looser image can skip (off by default).

Every field at its default is exact HART; each one trades fidelity for time, and its cost is measured
by `hart eval --task fast` (adherence, Fréchet distance and PSNR against the exact image on the
embedded model; seconds per image on any model). They live outside SamplingSettings on purpose: the
portable spec (what a port of an export must reproduce) stays the exact loop.

- unguided_scales: the last k scales run without classifier-free guidance, on the conditional rows
  alone (half the transformer rows there; Switti reports -32 % time at equal quality on its scale-wise
  model). The residual head then runs unguided too. Needs a backend whose row count is free (PyTorch,
  ONNX); Core ML's packages have two fixed rows.
- residual_steps: the residual head's DDPM steps, respaced from its training steps like HART's 8.
  Needs the PyTorch backend (an export unrolls its steps into the graph).
- pruned_scales, prune_ratio: FastVAR's cached token pruning on the last k scales: only the tokens whose
  input differs most from the scale's mean input (its high-frequency part) run through the transformer;
  the pruned ones take the previous scale's hidden states, upsampled (FastVAR reports 2.7x on VAR at
  1024 px, where the last scales hold most tokens). Later scales attend to the kept tokens' keys only.
  Needs the PyTorch backend (an export's step graphs have one token count per scale).
"""

from dataclasses import dataclass, field, replace

from hart.errors import ConfigError


@dataclass(frozen=True)
class Approximations:
    unguided_scales: int = 0  # the last k scales without classifier-free guidance (0: guided everywhere)
    residual_steps: int | None = None  # the residual head's DDPM steps (None: the model's own, HART: 8)
    pruned_scales: int = 0  # the last k scales with token pruning (0: every token everywhere)
    prune_ratio: float = 0.5  # the share of a pruned scale's tokens that skip the transformer
    name: str = field(default="exact", compare=False)  # what reports call this setting

    @property
    def exact(self) -> bool:
        return self.unguided_scales == 0 and self.residual_steps is None and self.pruned_scales == 0

    def check(self, num_scales: int, train_steps: int) -> None:
        """One sentence for settings the model cannot take (scale 0 always keeps both rows: its
        unconditional KV rows are what guided scales read)."""
        if not (isinstance(self.unguided_scales, int) and 0 <= self.unguided_scales < num_scales):
            raise ConfigError(f"unguided scales must be 0 to {num_scales - 1} for a model of {num_scales} scales "
                              f"(got {self.unguided_scales})")
        steps = self.residual_steps
        if steps is not None and not (isinstance(steps, int) and 1 <= steps <= train_steps):
            raise ConfigError(f"residual steps must be 1 to {train_steps}, the head's training steps (got {steps})")
        # scales 0 (the text prefix) and 1 (its previous hidden state is one text position) are never pruned
        most = max(num_scales - 2, 0)
        if not (isinstance(self.pruned_scales, int) and 0 <= self.pruned_scales <= most):
            raise ConfigError(f"pruned scales must be 0 to {most} for a model of {num_scales} scales "
                              f"(got {self.pruned_scales})")
        if self.pruned_scales and not 0 < self.prune_ratio < 1:
            raise ConfigError(f"the prune ratio (the share of a scale's tokens skipped) must be between 0 and 1 "
                              f"(got {self.prune_ratio})")

    def first_unguided(self, num_scales: int) -> int:
        """The index of the first scale run without guidance (num_scales when none is)."""
        return num_scales - self.unguided_scales

    def first_pruned(self, num_scales: int) -> int:
        """The index of the first scale with token pruning (num_scales when none is)."""
        return num_scales - self.pruned_scales

    def describe(self) -> str:
        if self.exact:
            return "exact"
        k, steps = self.unguided_scales, self.residual_steps
        parts = [f"no guidance on the last {k} scale{'s' * (k > 1)}"] if k else []
        parts += [f"{steps} residual step{'s' * (steps > 1)}"] if steps is not None else []
        pruned = self.pruned_scales
        parts += [f"{self.prune_ratio:.0%} of the tokens pruned on the last {pruned} scale{'s' * (pruned > 1)}"] \
            if pruned else []
        return ", ".join(parts)


EXACT = Approximations()
# --fast: variants each within 2 points of exact mean adherence on the embedded model, bundled; measured together
# too (hart eval --task fast, 240 held-out prompts, version 2.1: exact 97.6 %, this bundle 96.0 %; the old
# bundle, no guidance on the last 3 scales instead of 1, cost 3.3 points there and is still measured as
# unguided-3+residual-4+prune-2-25; the model card has the per-attribute cost). Exported graphs,
# which fix their residual steps and token counts, run its guidance part alone.
FAST = Approximations(unguided_scales=1, residual_steps=4, pruned_scales=2, prune_ratio=0.25, name="fast")


def fast_for(runtime: str) -> Approximations:
    """--fast on a runtime: FAST, less what it cannot run (an export unrolls its residual steps)."""
    return FAST if runtime == "torch" else replace(FAST, residual_steps=None, pruned_scales=0, name="fast")


# what `hart eval --task fast` measures; the names are its report's
VARIANTS = (EXACT,
            *(Approximations(unguided_scales=k, name=f"unguided-{k}") for k in (1, 2, 3)),
            *(Approximations(residual_steps=k, name=f"residual-{k}") for k in (4, 2, 1)),
            Approximations(unguided_scales=2, residual_steps=4, name="unguided-2+residual-4"),
            *(Approximations(pruned_scales=k, prune_ratio=r, name=f"prune-{k}-{round(r * 100)}")
              for k, r in ((1, 0.25), (1, 0.5), (1, 0.75), (2, 0.25), (2, 0.5), (3, 0.5))),
            Approximations(unguided_scales=3, residual_steps=4, name="unguided-3+residual-4"),
            Approximations(unguided_scales=3, residual_steps=4, pruned_scales=2, prune_ratio=0.25,
                           name="unguided-3+residual-4+prune-2-25"), FAST)


def variants(names: str | None) -> tuple[Approximations, ...]:
    """A comma list of VARIANTS' names (None: all) -> those variants, exact first; unknown names refused."""
    if names is None:
        return VARIANTS
    known = {v.name: v for v in VARIANTS}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ConfigError(f"unknown approximation(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    return (EXACT, *(known[n] for n in dict.fromkeys(wanted) if n != EXACT.name))
