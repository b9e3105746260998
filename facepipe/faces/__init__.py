"""The face layer: what training, evaluation, annotation and ``predict()`` share about a face image.

* :mod:`.decode`: image bytes decoded by content (EXIF orientation, pixel budget, every mode to
  ``uint8``), and arrays or PIL images already decoded;
* :mod:`.detect`: the face detector registry (Haar, MTCNN) behind one protocol;
* :mod:`.framing`: margins, the box noise training adds, boxes framed from labelled points;
* :mod:`.crop`: the square crop of a face box, and the one mapping of crop pixels back to the image;
* :mod:`.pose`: head pose (yaw, pitch, roll) from facial points and the shipped 3-D mean face.

It imports neither :mod:`facepipe.data` nor :mod:`facepipe.annotate` (``tests/test_layers.py``), and
this file imports none of its modules, so importing one of them loads only what it needs.
"""
