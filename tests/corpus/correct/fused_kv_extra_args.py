# Correct: a separate q projection beside a fused k/v Linear(D, 2D) split by chunk; extra
# constructor arguments with defaults (dropout_rate on the attention, use_final_norm on the ViT);
# attention dropout only in train mode; patches by a Conv2d without bias.
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def scaled_dot_product_attention(q, k, v, mask=None):
    attn = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        attn = attn.masked_fill(~mask.bool(), float("-inf"))
    attn = F.softmax(attn, dim=-1)
    return attn @ v, attn


class PatchEmbedding(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim):
        super().__init__()
        self.grid = image_size // patch_size
        self.projection = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size, bias=False)

    def forward(self, x):
        x = self.projection(x)
        return x.reshape(x.shape[0], x.shape[1], -1).transpose(-1, -2)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, dropout_rate=0.1):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(embed_dim, embed_dim)
        self.kv = nn.Linear(embed_dim, 2 * embed_dim)
        self.fc_out = nn.Linear(embed_dim, embed_dim)
        self.attn_drop = nn.Dropout(dropout_rate)

    def heads(self, t):
        b, n, d = t.shape
        return t.reshape(b, n, self.num_heads, d // self.num_heads).permute(0, 2, 1, 3)

    def forward(self, x, mask=None):
        b, n, d = x.shape
        k, v = self.kv(x).chunk(2, dim=-1)
        out, _ = scaled_dot_product_attention(self.heads(self.q(x)), self.heads(k), self.heads(v), mask)
        return self.attn_drop(self.fc_out(out.permute(0, 2, 1, 3).reshape(b, n, d)))


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_dim, dropout):
        super().__init__()
        self.pre_attn_norm = nn.LayerNorm(embed_dim)
        self.self_attention = MultiHeadSelfAttention(embed_dim, num_heads, dropout_rate=dropout)
        self.pre_mlp_norm = nn.LayerNorm(embed_dim)
        self.hidden = nn.Linear(embed_dim, mlp_dim)
        self.output = nn.Linear(mlp_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        x = x + self.self_attention(self.pre_attn_norm(x), mask)
        return x + self.dropout(self.output(self.dropout(F.gelu(self.hidden(self.pre_mlp_norm(x))))))


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes,
                 dropout=0.1, use_final_norm=True):
        super().__init__()
        self.patch_embedding = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        n = self.patch_embedding.grid ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.positional_embedding = nn.Parameter(torch.empty(1, n + 1, embed_dim).normal_(std=0.02))
        self.transformer = nn.ModuleList()
        for _ in range(num_layers):
            self.transformer.append(TransformerBlock(embed_dim, num_heads, mlp_dim, dropout))
        self.norm = nn.LayerNorm(embed_dim) if use_final_norm else nn.Identity()
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.patch_embedding(x)
        cls = self.cls_token.expand(x.size(0), 1, x.size(2))
        x = torch.cat((cls, x), dim=1)
        x = x + self.positional_embedding
        for block in self.transformer:
            x = block(x)
        return self.fc(self.norm(x[:, 0, :]))
