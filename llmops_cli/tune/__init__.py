"""`llmops tune`: supervised fine-tuning with TRL's SFTTrainer and peft."""
