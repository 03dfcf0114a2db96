"""The numbered steps, one module each with ``run(ctx)``, and the parts they share."""
