"""What users take away from a run, in the forms the ecosystem reads (docs/export.md):

- `dataset.py`: each iteration's curated pairs as one Hugging Face dataset folder (Parquet + a dataset card), which
  `datasets.load_dataset(folder)` reads as is;
- `model.py`: a trained model as a standalone transformers folder (LoRA merged into the base, safetensors, a model
  card), loadable without peft;
- `cards.py`: what both cards say about where things came from (sources, base model, their licences).

Publishing either folder is `python -m humpback.evaluation.export.publish FOLDER --repo-id OWNER/NAME`
(humpback/evaluation/export/publish.py).
"""
