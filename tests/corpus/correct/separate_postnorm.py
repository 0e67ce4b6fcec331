# Correct: separate q/k/v without bias registered as value, key, query; post-norm blocks;
# patches by F.unfold + Linear over (C, p, p); masked scores filled with -1e9.
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(k.size(-1))
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    weights = F.softmax(scores, dim=-1)
    return torch.matmul(weights, v), weights


class PatchEmbedding(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        self.n_patches = (image_size // patch_size) ** 2
        self.linear = nn.Linear(in_channels * patch_size * patch_size, embed_dim)

    def forward(self, x):
        cols = F.unfold(x, kernel_size=self.patch_size, stride=self.patch_size)  # (B, C*p*p, N)
        return self.linear(cols.transpose(1, 2))


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.h = num_heads
        self.d = embed_dim // num_heads
        self.value = nn.Linear(embed_dim, embed_dim, bias=False)
        self.key = nn.Linear(embed_dim, embed_dim, bias=False)
        self.query = nn.Linear(embed_dim, embed_dim, bias=False)
        self.projection = nn.Linear(embed_dim, embed_dim)

    def split(self, t):
        b, n, _ = t.shape
        return t.view(b, n, self.h, self.d).transpose(1, 2)

    def forward(self, x, mask=None):
        b, n, c = x.shape
        out, _ = scaled_dot_product_attention(self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x)), mask)
        return self.projection(out.transpose(1, 2).contiguous().view(b, n, c))


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_dim, dropout):
        super().__init__()
        self.attention = MultiHeadSelfAttention(embed_dim, num_heads)
        self.ln_1 = nn.LayerNorm(embed_dim)
        self.feed_forward = nn.Sequential(nn.Linear(embed_dim, mlp_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(mlp_dim, embed_dim))
        self.ln_2 = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        x = self.ln_1(x + self.dropout(self.attention(x, mask)))
        return self.ln_2(x + self.dropout(self.feed_forward(x)))


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.patches = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.class_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.position_embedding = nn.Parameter(torch.randn(1, self.patches.n_patches + 1, embed_dim))
        self.layers = nn.Sequential(*[TransformerBlock(embed_dim, num_heads, mlp_dim, dropout) for _ in range(num_layers)])
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        tokens = self.patches(x)
        tokens = torch.cat([self.class_token.repeat(tokens.size(0), 1, 1), tokens], dim=1) + self.position_embedding
        return self.classifier(self.layers(tokens)[:, 0])
