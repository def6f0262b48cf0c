"""`python -m empathic_lora.export`: a checkpoint as a standard PEFT adapter or merged model (`exporter`)."""
