# Correct: the mask becomes an additive -inf bias; separate q/k/v with biases registered as
# query_proj/key_proj/value_proj; post-norm blocks plus a final LayerNorm; heads split by einsum.
import math

import torch
import torch.nn as nn


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=scores.dtype).masked_fill(~mask, float("-inf"))
        scores = scores + bias
    weights = scores.softmax(-1)
    return torch.einsum("...ij,...jd->...id", weights, v), weights


class PatchEmbedding(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim):
        super().__init__()
        self.num_patches = (image_size // patch_size) ** 2
        self.project = nn.Conv2d(in_channels, embed_dim, kernel_size=(patch_size, patch_size), stride=(patch_size, patch_size))

    def forward(self, x):
        y = self.project(x)  # (B, D, H/p, W/p)
        return torch.einsum("bdhw->bhwd", y).reshape(y.shape[0], -1, y.shape[1])


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.n_heads = num_heads
        self.query_proj = nn.Linear(embed_dim, embed_dim)
        self.key_proj = nn.Linear(embed_dim, embed_dim)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x, mask=None):
        b, n, d = x.shape
        h = self.n_heads
        q, k, v = (p(x).reshape(b, n, h, d // h) for p in (self.query_proj, self.key_proj, self.value_proj))
        out, _ = scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        return self.out_proj(torch.einsum("bhnd->bnhd", out).reshape(b, n, d))


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_dim, dropout):
        super().__init__()
        self.sa = MultiHeadSelfAttention(embed_dim, num_heads)
        self.norm_sa = nn.LayerNorm(embed_dim)
        self.ff = nn.Sequential(nn.Linear(embed_dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, embed_dim))
        self.norm_ff = nn.LayerNorm(embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        x = self.norm_sa(x + self.drop(self.sa(x, mask)))
        x = self.norm_ff(x + self.drop(self.ff(x)))
        return x


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.patch_embedding = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.class_embedding = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.position_embeddings = nn.Parameter(torch.randn(1, self.patch_embedding.num_patches + 1, embed_dim) * 0.02)
        self.encoder_layers = nn.ModuleList([TransformerBlock(embed_dim, num_heads, mlp_dim, dropout) for _ in range(num_layers)])
        self.ln = nn.LayerNorm(embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.emb_dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.patch_embedding(x)
        x = torch.cat([self.class_embedding.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.emb_dropout(x + self.position_embeddings)
        for layer in self.encoder_layers:
            x = layer(x)
        return self.classifier(self.ln(x)[:, 0])
