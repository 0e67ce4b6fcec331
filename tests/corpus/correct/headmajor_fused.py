# Correct: one fused Linear(D, 3D) laid out per head, (B, N, heads, 3, head_dim); patches by a
# reshape to (p, p, C) and a Linear; einsum attention; a final LayerNorm; zero-initialized positions.
import torch
import torch.nn as nn


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = torch.einsum("...nd,...md->...nm", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(torch.logical_not(mask), float("-inf"))
    attention = torch.softmax(scores, dim=-1)
    return torch.einsum("...nm,...md->...nd", attention, v), attention


class PatchEmbedding(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim):
        super().__init__()
        self.p = patch_size
        self.patch_count = (image_size // patch_size) ** 2
        self.embedding_layer = nn.Linear(patch_size * patch_size * in_channels, embed_dim)

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.p
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, H/p, W/p, p, p, C)
        return self.embedding_layer(x.reshape(b, (h // p) * (w // p), p * p * c))


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.to_out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x, mask=None):
        b, n, d = x.shape
        qkv = self.to_qkv(x).reshape(b, n, self.num_heads, 3, d // self.num_heads).permute(3, 0, 2, 1, 4)
        out, _ = scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], mask)
        return self.to_out(out.permute(0, 2, 1, 3).reshape(b, n, d))


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_dim, dropout):
        super().__init__()
        self.norm_a = nn.LayerNorm(embed_dim)
        self.msa = MultiHeadSelfAttention(embed_dim, num_heads)
        self.norm_b = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        x = x + self.drop(self.msa(self.norm_a(x), mask=mask))
        return x + self.drop(self.fc2(self.drop(nn.functional.gelu(self.fc1(self.norm_b(x))))))


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        self.embed = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, self.embed.patch_count + 1, embed_dim))
        self.blocks = nn.ModuleList([TransformerBlock(embed_dim, num_heads, mlp_dim, dropout) for _ in range(num_layers)])
        self.final_norm = nn.LayerNorm(embed_dim)
        self.mlp_head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embedding
        for blk in self.blocks:
            x = blk(x)
        return self.mlp_head(self.final_norm(x)[:, 0])
