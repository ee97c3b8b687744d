"""One LightningModule per task on a small shared base."""
