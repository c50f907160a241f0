"""gafu datasets: tfds builders (array_record, no TensorFlow), the grain training pipeline, demo data.

  builders.prepare_dataset(kind, out, src=..., resolution=...)   build a dataset (= `gafu prepare-data`)
  pipeline.open_source(path, split) / make_train_iter(...)       read it as a sharded, resumable batch stream
  pipeline.make_batches(data, {key: (split, feature)}, ...)      the named splits a training recipe asks for
  demo.load_demo_domains(resolution)                              the embedded demo domains, in memory
  styles.styled_domain(resolution)                                the demo faces in 8 looks (GANs N' Roses)
  attributes.read_celeba_attributes / read_lfw_attributes         attribute tables for DFI

This package imports nothing else of gafu (the floors in README.md). Submodules are imported on demand so
that `import datasets` stays cheap.
"""
