"""Course-contract notebooks: correct ones in the styles of real course submissions, and the real
bugs seen in course notebooks, each put into one of them (a single change)."""

from __future__ import annotations

from pathlib import Path

from tests.corpus.mutants import Mutant

HERE = Path(__file__).resolve().parent
STYLES = HERE / "styles.py"  # extra arguments, attention dropout, a class defined twice, trunc_normal_, final LayerNorm
SEPARATE = HERE / "separate.py"  # separate biasless q/k/v, einsum, post-norm, zero init, no final LayerNorm

BUGS = [
    Mutant(
        "attention_over_channels",
        ("mhsa",),
        "attn = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)",
        "attn = (q.transpose(-2, -1) @ k) / math.sqrt(self.head_dim)  # (B, heads, head_dim, head_dim)",
        STYLES,
        more=(("out = attn @ v  # (B, heads, N, head_dim)", "out = v @ attn  # (B, heads, N, head_dim)"),),
    ),
    Mutant(
        "attention_between_heads",
        ("mhsa",),
        'scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / self.d ** 0.5\n        weights = torch.softmax(scores, dim=-1)\n'
        '        out = torch.einsum("bhnm,bmhd->bnhd", weights, v).reshape(B, N, D)',
        'scores = torch.einsum("bnhd,bngd->bnhg", q, k) / self.d ** 0.5\n        weights = torch.softmax(scores, dim=-1)\n'
        '        out = torch.einsum("bnhg,bngd->bnhd", weights, v).reshape(B, N, D)',
        SEPARATE,
    ),
    Mutant(
        "qkv_split_on_heads_axis",
        ("mhsa",),
        "qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, heads, N, head_dim)\n        q, k, v = qkv[0], qkv[1], qkv[2]",
        "qkv = qkv.permute(0, 3, 2, 1, 4)  # (B, heads, 3, N, head_dim)\n        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]",
        STYLES,
    ),
    Mutant("scaled_by_embed_dim", ("mhsa",), "/ math.sqrt(self.head_dim)", "/ math.sqrt(self.embed_dim)", STYLES),
    Mutant(
        "class_token_drawn_in_forward",
        ("vit",),
        "cls_tokens = self.cls_token.expand(B, -1, -1)",
        "cls_tokens = torch.randn(B, 1, x.shape[-1])",
        STYLES,
    ),
    Mutant(
        "class_token_in_patch_embedding",
        ("patch",),
        "        x = x.transpose(1, 2)  # (B, N, D)\n        return x\n",
        "        x = x.transpose(1, 2)  # (B, N, D)\n        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)\n"
        "        return x + self.pos_embed\n",
        STYLES,
        more=(
            ("self.projection = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)\n",
             "self.projection = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)\n"
             "        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))\n"
             "        self.pos_embed = nn.Parameter(torch.randn(1, self.n_patches + 1, embed_dim) * 0.02)\n"),
            ("        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))\n"
             "        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))\n", ""),
            ("        nn.init.trunc_normal_(self.pos_embed, std=0.02)\n        nn.init.trunc_normal_(self.cls_token, std=0.02)\n", ""),
            ("        cls_tokens = self.cls_token.expand(B, -1, -1)\n        x = torch.cat((cls_tokens, x), dim=1)\n"
             "        x = x + self.pos_embed\n", ""),
        ),
    ),
    Mutant("mean_pooling", ("vit",), "return self.head(x[:, 0])", "return self.head(x.mean(dim=1))", STYLES),
]
