"""The local datasets: scanning shared folders into versions, history, audiences, and retention of old versions."""
