"""Paint with units (the paper's GANPaint): a local web page where a person draws or removes a concept in a
generated image by inserting or ablating its causal units under a brush (`python -m lightning_gd paint`).

`session.PaintSession` holds the palette and the images being edited (library code a script can use directly);
`server.create_app` serves it as a page and a JSON API."""
