"""The model stage: Qwen2-VL loaded with its processor and LoRA adapter, trained on the tuples,
then predicting answers and embedding images (h_im, h_im,a)."""
