"""Python helpers shared by fpn's tools: safetensors I/O and fixture makers."""
