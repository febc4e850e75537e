"""The embedded local stack: moto server, provisioning, sample PDFs, dev and demo."""
