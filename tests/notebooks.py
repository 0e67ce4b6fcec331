"""Build submissions the way students hand them in: notebooks in course style, zips."""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HYPER = """image_size = 32
patch_size = 4
in_channels = 3
embed_dim = 256
num_heads = 8
mlp_dim = 512
num_layers = 6
num_classes = 100
dropout = 0.1
batch_size = 128
num_epochs = 200
learning_rate = 3e-4"""

COLAB = """!pip install -q einops
%matplotlib inline
from google.colab import drive
drive.mount('/content/drive')"""

SMOKE = """model = VisionTransformer(image_size, patch_size, in_channels, embed_dim, num_heads, mlp_dim, num_layers, num_classes, dropout).to(device)
x = torch.randn(2, in_channels, image_size, image_size).to(device)
print(model(x).shape)"""

DATA = """from torchvision import datasets, transforms
transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.Resize(image_size),
                                transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                transforms.Normalize((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))])
train_dataset = datasets.CIFAR100(root="./data", train=True, download=True, transform=transform)
train_loader = torch.utils.data.DataLoader(train_dataset, batch_size=batch_size, shuffle=True, num_workers=2)"""

TRAIN = """open({marker!r}, "w").write("the training cell ran")
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
for epoch in range(num_epochs):
    for images, labels in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(images.to(device)), labels.to(device))
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), "best_model.pth")"""


def cells_of(source: str) -> list[str]:
    """One cell for the imports and one per top-level definition, as students lay them out."""
    tree = ast.parse(source)
    imports = [ast.get_source_segment(source, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    defs = [ast.get_source_segment(source, n) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    return ["\n".join(i for i in imports if i)] + [d for d in defs if d]


def course_notebook(source: str, colab: bool = False, marker: str = "TRAINING_RAN") -> nbformat.NotebookNode:
    """Imports, device, (Colab lines,) one cell per definition, hyper-parameters, a smoke test,
    CIFAR-100 download and a training loop whose first line writes `marker`."""
    cells = [new_markdown_cell("# HW4: Vision Transformer")]
    code = cells_of(source)
    cells.append(new_code_cell(code[0]))
    cells.append(new_code_cell('device = torch.device("cuda" if torch.cuda.is_available() else "cpu")'))
    if colab:
        cells.append(new_code_cell(COLAB))
    cells += [new_code_cell(c) for c in code[1:]]
    cells += [new_code_cell(HYPER), new_code_cell(SMOKE), new_code_cell(DATA), new_code_cell(TRAIN.format(marker=marker))]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def write_notebook(source: str, path: Path, colab: bool = False, marker: str = "TRAINING_RAN") -> Path:
    nbformat.write(course_notebook(source, colab, marker), path)
    return path


def write_nbformat_40(source: str, path: Path) -> Path:
    """An old nbformat 4.0 file: no cell ids, sources as lists of lines."""
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": c.splitlines(True)}
        for c in [*cells_of(source), HYPER, TRAIN.format(marker="TRAINING_RAN")]
    ]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 0}, indent=1))
    return path


def write_course_zip(notebook: Path, path: Path, name: str = "hw4_impl.ipynb", extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(notebook, name)
        archive.writestr("hw4_theory.pdf", b"%PDF-1.4\n% theory answers\n")
        for member, data in (extra or {}).items():
            archive.writestr(member, data)
    return path
