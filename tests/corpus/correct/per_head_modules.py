# Correct: per-head projections (a ModuleList of Linear(D, D // heads) for each of q, k, v),
# one call of the student's attention per head on (B, N, D/heads), pre-norm, Conv2d patches.
import math

import torch
import torch.nn as nn


def scaled_dot_product_attention(q, k, v, mask=None):
    d_k = q.size(-1)
    logits = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        logits = torch.where(mask, logits, torch.tensor(float("-inf"), dtype=logits.dtype))
    attn = logits.softmax(dim=-1)
    return attn @ v, attn


class PatchEmbedding(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim):
        super().__init__()
        self.num_patches = (image_size // patch_size) ** 2
        self.conv = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)

    def forward(self, x):
        return self.conv(x).flatten(2).permute(0, 2, 1)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        head_dim = embed_dim // num_heads
        self.q_heads = nn.ModuleList([nn.Linear(embed_dim, head_dim) for _ in range(num_heads)])
        self.k_heads = nn.ModuleList([nn.Linear(embed_dim, head_dim) for _ in range(num_heads)])
        self.v_heads = nn.ModuleList([nn.Linear(embed_dim, head_dim) for _ in range(num_heads)])
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x, mask=None):
        if mask is not None and mask.dim() == 4:
            mask = mask[:, 0]  # (B, 1, n, m) -> (B, n, m): one head at a time
        heads = [scaled_dot_product_attention(q(x), k(x), v(x), mask)[0] for q, k, v in zip(self.q_heads, self.k_heads, self.v_heads)]
        return self.out(torch.cat(heads, dim=-1))


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_dim, dropout):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = MultiHeadSelfAttention(embed_dim, num_heads)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, embed_dim), nn.Dropout(dropout))

    def forward(self, x, mask=None):
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.patch = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.cls = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + self.patch.num_patches, embed_dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(TransformerBlock(embed_dim, num_heads, mlp_dim, dropout) for _ in range(num_layers))
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))

    def forward(self, x):
        x = self.patch(x)
        x = self.dropout(torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos)
        for layer in self.encoder:
            x = layer(x)
        return self.head(x[:, 0])
