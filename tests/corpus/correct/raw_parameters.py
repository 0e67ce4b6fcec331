# Correct: attention weights as raw (in, out) nn.Parameter matrices used as x @ W, no biases;
# patches by unfold on the tensor and a Linear; a learned class token and positions.
import math

import torch
import torch.nn as nn


def scaled_dot_product_attention(q, k, v, mask=None):
    s = q.matmul(k.transpose(-2, -1)).div(math.sqrt(q.shape[-1]))
    if mask is not None:
        s = s.masked_fill(mask.logical_not(), float("-inf"))
    a = s.softmax(-1)
    return a.matmul(v), a


class PatchEmbedding(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Linear(in_channels * patch_size**2, embed_dim)

    def forward(self, x):
        p = self.patch_size
        x = x.unfold(2, p, p).unfold(3, p, p)  # (B, C, H/p, W/p, p, p)
        x = x.permute(0, 2, 3, 1, 4, 5).flatten(3)  # (B, H/p, W/p, C*p*p)
        return self.proj(x.flatten(1, 2))


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.heads = num_heads
        scale = embed_dim**-0.5
        self.W_q = nn.Parameter(torch.randn(embed_dim, embed_dim) * scale)
        self.W_k = nn.Parameter(torch.randn(embed_dim, embed_dim) * scale)
        self.W_v = nn.Parameter(torch.randn(embed_dim, embed_dim) * scale)
        self.W_o = nn.Parameter(torch.randn(embed_dim, embed_dim) * scale)

    def forward(self, x, mask=None):
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
        y, _ = scaled_dot_product_attention(split(x @ self.W_q), split(x @ self.W_k), split(x @ self.W_v), mask)
        return y.transpose(1, 2).reshape(b, n, d) @ self.W_o


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_dim, dropout):
        super().__init__()
        self.n1 = nn.LayerNorm(embed_dim)
        self.n2 = nn.LayerNorm(embed_dim)
        self.mhsa = MultiHeadSelfAttention(embed_dim, num_heads)
        self.ffn = nn.Sequential(nn.Linear(embed_dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, embed_dim), nn.Dropout(dropout))

    def forward(self, x, mask=None):
        h = x + self.mhsa(self.n1(x), mask)
        return h + self.ffn(self.n2(h))


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.to_patches = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.positions = nn.Parameter(torch.randn(1, self.to_patches.num_patches + 1, embed_dim) * 0.02)
        self.stack = nn.ModuleList([TransformerBlock(embed_dim, num_heads, mlp_dim, dropout) for i in range(num_layers)])
        self.out_norm = nn.LayerNorm(embed_dim)
        self.linear_head = nn.Linear(embed_dim, num_classes)

    def forward(self, images):
        z = self.to_patches(images)
        z = torch.cat([self.token.expand(z.shape[0], -1, -1), z], dim=1) + self.positions
        for block in self.stack:
            z = block(z)
        return self.linear_head(self.out_norm(z[:, 0]))
