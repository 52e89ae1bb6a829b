"""What every stage shares, one job a file: records (data, --forget, batches), models (loading, precision,
log-probabilities), prompts (templates to token ids), lora (adapters), metrics (TOFU's math) and cli
(errors, flags, outputs, checkpoints). Nothing here imports a stage."""
