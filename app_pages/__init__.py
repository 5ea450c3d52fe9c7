"""Pages of the Streamlit app (run from the repository root; not part of the explorer package)."""
