"""Wrong, degenerate and lazy submissions: code that a fair grade must not reward. Each is the
reference with some definitions replaced, so that the rest of the notebook is as a student's."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .mutants import MUTANTS, REFERENCE

ZERO_SDPA = '''
def scaled_dot_product_attention(q, k, v, mask=None):
    n, m = q.shape[-2], k.shape[-2]
    return torch.zeros(*q.shape[:-1], v.shape[-1]), torch.full((*q.shape[:-1], m), 1.0 / m)
'''
ZERO_PATCH = '''
class PatchEmbedding(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim):
        super().__init__()
        self.n, self.d = (image_size // patch_size) ** 2, embed_dim
        self.proj = nn.Linear(in_channels * patch_size * patch_size, embed_dim)

    def forward(self, x):
        return torch.zeros(x.shape[0], self.n, self.d) + 0 * self.proj.weight.sum()
'''
IDENTITY_MHSA = '''
class MultiHeadSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x, mask=None):
        return x + 0 * (self.qkv.weight.sum() + self.qkv.bias.sum() + self.out.weight.sum() + self.out.bias.sum())
'''
IDENTITY_BLOCK = '''
class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_dim, dropout):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)
        self.attn = MultiHeadSelfAttention(embed_dim, num_heads)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, embed_dim))

    def forward(self, x, mask=None):
        return x
'''
CONSTANT_VIT = '''
class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        return self.head.bias.expand(x.shape[0], -1) * 1.0
'''
MLP_VIT = '''
class VisionTransformer(nn.Module):
    """No attention at all: patches -> per-token MLP -> mean pool -> head."""

    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.patch = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.pos = nn.Parameter(torch.randn(1, self.patch.num_patches, embed_dim) * 0.02)
        self.mlps = nn.Sequential(*[nn.Sequential(nn.Linear(embed_dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, embed_dim)) for _ in range(num_layers)])
        self.head = nn.Linear(embed_dim * self.patch.num_patches, num_classes)

    def forward(self, x):
        tokens = self.mlps(self.patch(x) + self.pos)
        return self.head(tokens.flatten(1))
'''
LINEAR_VIT = '''
class VisionTransformer(nn.Module):
    """No attention at all: one linear map from the pixels to the logits."""

    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.head = nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x):
        return self.head(x.flatten(1))
'''
MEAN_POOLED_VIT = '''
class VisionTransformer(nn.Module):
    """No attention at all: patches + positions -> per-token MLPs -> mean over tokens -> head."""

    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.patch = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.pos = nn.Parameter(torch.randn(1, self.patch.num_patches, embed_dim) * 0.02)
        self.mlps = nn.ModuleList(nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, embed_dim)) for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        tokens = self.patch(x) + self.pos
        for mlp in self.mlps:
            tokens = tokens + mlp(tokens)
        return self.head(self.norm(tokens.mean(1)))
'''
# Identities whose parameters get gradients without changing any value.
NO_EFFECT = "sum(p.sum() - p.sum().detach() for p in self.parameters())"
NO_EFFECT_MHSA = IDENTITY_MHSA.replace(
    "0 * (self.qkv.weight.sum() + self.qkv.bias.sum() + self.out.weight.sum() + self.out.bias.sum())", NO_EFFECT
)
NO_EFFECT_BLOCK = IDENTITY_BLOCK.replace("return x\n", f"return x + {NO_EFFECT}\n")
# Looks for the training task's marker patches among the patterns drawn from seeds a student
# could guess (the public ones) and answers "same" when the two best matches are one pattern:
# worthless once the patterns come from the grade's hidden seed.
DETECTOR_VIT = '''
class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        banks = [torch.randn(32, in_channels, patch_size, patch_size, generator=torch.Generator().manual_seed(s)).sign() for s in range(100)]
        self.register_buffer("patterns", torch.cat(banks).flatten(1))  # (guesses, C*p*p)
        self.p, self.grid = patch_size, image_size // patch_size
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        B, C, H, W = x.shape
        patches = x.unfold(2, self.p, self.p).unfold(3, self.p, self.p)  # (B, C, g, g, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(B, self.grid * self.grid, -1)
        match = patches @ self.patterns.T  # (B, N, guesses)
        best, which = match.max(-1)  # (B, N): how well, and which guess, per patch
        first = best.argmax(-1, keepdim=True)  # the two most marker-like patches
        second = torch.where(torch.arange(best.shape[1]) == first, -1e9, best).argmax(-1, keepdim=True)
        same = (which.gather(1, first) == which.gather(1, second)).long()[:, 0]
        return 10.0 * (torch.arange(self.bias.shape[0]) == same[:, None]).float() + self.bias
'''
BLOCKS_NEVER_CALLED = '''
class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.patch = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos = nn.Parameter(torch.randn(1, self.patch.num_patches + 1, embed_dim) * 0.02)
        self.blocks = nn.ModuleList([TransformerBlock(embed_dim, num_heads, mlp_dim, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.patch(x)], dim=1) + self.pos
        return self.head(self.norm(tokens.mean(1))) + 0 * sum(p.sum() for p in self.blocks.parameters())
'''


def replace(source: str, name: str, new: str) -> str:
    """SOURCE with the top-level definition NAME replaced by NEW."""
    kind = "def" if name[0].islower() else "class"
    pattern = re.compile(rf"^{kind} {name}\b.*?(?=^(?:class|def) |\Z)", re.S | re.M)
    assert pattern.search(source), name
    return pattern.sub(new.strip("\n") + "\n\n\n", source, count=1)


@dataclass(frozen=True)
class Degenerate:
    name: str
    replaced: dict[str, str]
    at_most: float  # the most points it may earn out of 50
    nothing_in: tuple[str, ...]  # units where it must earn 0

    def source(self) -> str:
        text = REFERENCE.read_text()
        for name, new in self.replaced.items():
            text = replace(text, name, new)
        return text


def wrong_everywhere() -> str:
    """One bug in every unit at once (the first mutant of each unit)."""
    text = REFERENCE.read_text()
    done: set[str] = set()
    for mutant in MUTANTS:
        if mutant.units[0] not in done and text.count(mutant.old) == 1:
            text = text.replace(mutant.old, mutant.new)
            done.add(mutant.units[0])
    return text


_ZEROS = {
    "scaled_dot_product_attention": ZERO_SDPA,
    "PatchEmbedding": ZERO_PATCH,
    "MultiHeadSelfAttention": IDENTITY_MHSA.replace("return x +", "return 0 * x +"),
    "TransformerBlock": IDENTITY_BLOCK.replace("return x", "return 0 * x"),
    "VisionTransformer": CONSTANT_VIT.replace("self.head.bias.expand", "0 * self.head.bias.expand"),
}
# The whole model without attention: queries see only themselves, heads are per-token maps, the
# ViT pools per-token MLPs. The patch embedding and the block's own wiring (norms, residuals,
# MLP) are right and earn their units (6 + 5 measured); nothing that needs attention earns.
_NO_ATTENTION = {
    "scaled_dot_product_attention": '''
def scaled_dot_product_attention(q, k, v, mask=None):
    n = q.shape[-2]
    return v[..., :n, :] * 1.0, torch.eye(n, k.shape[-2]).expand(*q.shape[:-1], k.shape[-2])
''',
    "MultiHeadSelfAttention": IDENTITY_MHSA.replace("return x +", "return self.out(x) +"),
    "VisionTransformer": MEAN_POOLED_VIT,
}
NOT_THE_VIT = ("vit", "train", "policy")  # a fake ViT earns nothing there, whatever else is right
DEGENERATE = [
    Degenerate("zeros", _ZEROS, 5, ("sdpa", "patch", "mhsa", "block", "vit", "train", "policy")),
    Degenerate("identity", {"MultiHeadSelfAttention": IDENTITY_MHSA, "TransformerBlock": IDENTITY_BLOCK}, 30, ("mhsa", "block", "policy")),
    Degenerate("constant_logits", {"VisionTransformer": CONSTANT_VIT}, 36, NOT_THE_VIT),
    Degenerate("no_attention_mlp", {"VisionTransformer": MLP_VIT}, 36, NOT_THE_VIT),
    Degenerate("blocks_never_called", {"VisionTransformer": BLOCKS_NEVER_CALLED}, 36, NOT_THE_VIT),
    Degenerate("linear_on_pixels", {"VisionTransformer": LINEAR_VIT}, 36, NOT_THE_VIT),
    Degenerate("mean_pooled_per_token_mlp", {"VisionTransformer": MEAN_POOLED_VIT}, 36, NOT_THE_VIT),
    Degenerate("no_effect_parameters", {"MultiHeadSelfAttention": NO_EFFECT_MHSA, "TransformerBlock": NO_EFFECT_BLOCK}, 30, ("mhsa", "block", "policy")),
    Degenerate("training_task_detector", {"VisionTransformer": DETECTOR_VIT}, 36, NOT_THE_VIT),
    # 12: the patch embedding (6) and the block (6) are correct code; the block's parameters that get no
    # gradient are the MHSA's, so that failure costs the MHSA, not the block
    Degenerate("no_attention_anywhere", _NO_ATTENTION, 12, ("sdpa", "mask", "mhsa", "vit", "train", "policy")),
]
