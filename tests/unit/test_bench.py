

def test_the_stage_table_names_every_models_scales_in_loop_order():
    """A report of the 6-scale embedded model and the 10-scale 0.7B lists all ten scales, in order."""
    from hart.bench.report import _stage_names

    small = {"stage_seconds": {"text": 0, **{f"scale_{i}": 0 for i in range(6)}, "residual": 0, "decode": 0}}
    large = {"stage_seconds": {"text": 0, **{f"scale_{i}": 0 for i in range(10)}, "residual": 0, "decode": 0}}
    assert _stage_names([small, large]) == ["text", *(f"scale_{i}" for i in range(10)), "residual", "decode"]
