"""Public tests of PatchEmbedding."""


from vitgrade.runner.api import case, describe, expect_shape, patch_mappings, patch_token_causes, search_transplant


@case(unit="patch", points=1)
def test_shape(student, fixtures):
    """(B, C, H, W) -> (B, (H/p)*(W/p), D)"""
    x = fixtures("patch")["x"]
    embed = student.build("PatchEmbedding", 16, 4, 3, 24, seed=0)
    expect_shape(embed(x), (2, 16, 24), "PatchEmbedding(16, 4, 3, 24) output", describe(x=x), patch_token_causes(2, 16, 24))


@case(unit="patch", points=1, anchor=True)
def test_transplant(student, fixtures):
    """with the reference's projection weights, the output equals the reference's"""
    d = fixtures("patch")
    embed = student.build("PatchEmbedding", 16, 4, 3, 24, seed=0)
    ref = {"patch.weight": d["patch.weight"], "patch.bias": d["patch.bias"]}
    search_transplant(
        embed,
        patch_mappings(embed.info(), 24, 3, 4),
        ref,
        heads=1,
        inputs=(d["x"],),
        expected=lambda _: d["out"],
        what="PatchEmbedding (patches must be non-overlapping and in row-major order)",
    )
