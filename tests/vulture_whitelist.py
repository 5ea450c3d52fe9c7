"""What vulture cannot see used, one line each with the reason (read by tests/test_architecture.py's
dead-code check, ``vulture explorer app_pages app.py tests/vulture_whitelist.py --min-confidence 60``)."""
# ruff: noqa: F821, B018  (vulture's whitelist idiom: attribute access on an undefined name)

_.find_class  # pickle.Unpickler protocol: pickle calls it (backbones/torchfiles.py)
_.persistent_load  # pickle.Unpickler protocol: pickle calls it for tensor storages
_.set_description  # tqdm's interface: huggingface_hub calls it on the progress bar it is given (backbones/hub.py)
_.__doc__  # the generated reader's docstring (data/datasets/filenames.py)
__getattr__  # PEP 562 module attribute hook: Method / ConfigMixin imported lazily (methods/__init__.py)
CoOp  # registered by name in explorer.methods.REGISTRY ("module:Class" strings)
LinearProbe  # as above
OrdinalCLIP  # as above
_.producer_name  # a field of the ONNX ModelProto written into the file (store/onnx_export.py)
_.intra_op_num_threads  # onnxruntime SessionOptions: read by the session (predict/onnx_runtime.py)
_.last_epoch  # torch's LR scheduler state, restored when a run resumes (training/trainer.py)
_._last_lr  # as above
mtime_ns  # a Streamlit cache key: the file's modification time (app_pages/ui/listing.py)
hashes  # a Streamlit cache key: the checkpoints' content hashes (app_pages/ui/resources.py)
cache_key  # a Streamlit cache key: hub endpoint, cache folder, offline flag, ended downloads (app_pages/models.py)
