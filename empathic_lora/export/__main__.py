from empathic_lora.export.exporter import main

main()
