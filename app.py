"""OrdinalCLIP Explorer: Streamlit app (placeholder; the real app comes later)."""

import streamlit as st

st.title("OrdinalCLIP Explorer")
st.write("See, train and use OrdinalCLIP / CoOp prompt learners for ordinal regression with CLIP.")
