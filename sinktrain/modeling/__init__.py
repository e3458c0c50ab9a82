"""The model-side code: what runs inside a forward (sink rules, slot tracking, each family's slot
map, the DualMLP connector, sink-first order, LSG's gates and hooks).

Its modules import only torch, transformers and each other (relatively, all in this one folder), so
a Hugging Face export carries them as remote code (transformers copies a modeling file's relative
imports) and runs the very forward sinktrain trained: sinktrain itself is not needed to load an
export. Keep it that way: no ``import sinktrain`` and no other third-party package here.
"""
