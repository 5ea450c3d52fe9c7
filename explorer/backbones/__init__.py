"""CLIP backbones: specs, loading (demo, open_clip zoo, hub, local files), weight files, the hub client,
the truncated text encoder, the model catalogue and the app's bounded backbone pool."""
