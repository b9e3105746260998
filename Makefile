# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-demo bench weights-keypoints weights-landmarks68 weights-emotion mean-face

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Train both models briefly on generated data, evaluate them and annotate a small folder.
# Everything lands in demo_output/.
demo: $(STAMP)
	$(PY) jobs/demo.py --output demo_output

# Two pytest workers (pytest-xdist), each with its own session Ray and S3 server: much of the
# suite waits on process start-up, Ray start-up and kills, so two share 2 cores well.
# `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q --durations=25 -n $(TEST_WORKERS) tests

clean-demo:
	rm -rf demo_output

# Rebuild the shipped keypoint model (facepipe/weights/keypoints) from the real data in ../shared:
# about 18 minutes on 2 cores. The model card (README.md there) states what this gave.
SHARED ?= ../shared/data
KP_FRAMES := $(SHARED)/keypoints/ytf_frames
KP_RECIPE ?= --epochs 150 --width 24 --head integral --margin 0 --rotate 15 --brightness 0.3 --contrast 0.3 --erase 0.25 --noise 0.02 --shift 0.03 --scale 0.05
weights-keypoints: $(STAMP)
	rm -rf runs/weights-keypoints
	$(PY) jobs/train.py --task keypoints --data $(KP_FRAMES)/ytf_frames_kaggle15.csv --images $(KP_FRAMES)/frames \
	    --output runs/weights-keypoints $(KP_RECIPE) --weights-dtype float16 --no-tta
	cp runs/weights-keypoints/keypoints/model/weights.pt runs/weights-keypoints/keypoints/model/meta.json facepipe/weights/keypoints/
	$(PY) bench/keypoints_in_the_wild.py --keypoints-model facepipe/weights/keypoints

# Rebuild the shipped 68-point model (facepipe/weights/landmarks68, `--landmarks 68`): two networks
# of the same recipe on the 68-point labels, framed with a quarter-side margin (at margin 0 the
# detector's box cuts off most chins) and seen at 128 px, the second with the jaw line's loss weighted
# 0.3; averaged into one model directory stored in int8 (two float16 networks would be 7.7 MB).
# About 43 and 42 minutes on 2 cores (run nothing else beside them); the model card states what it gave.
LM68_RECIPE ?= $(subst --margin 0,--margin 0.25 --input-size 128,$(KP_RECIPE))
# One word per network, as EM_MEMBERS below: its run directory, a colon, its own flags joined by commas.
LM68_MEMBERS ?= base: jaw:--keypoint-weights=p00..p16=0.3
weights-landmarks68: $(STAMP)
	rm -rf runs/weights-landmarks68
	for m in $(LM68_MEMBERS); do \
	    $(PY) jobs/train.py --task keypoints --data $(KP_FRAMES)/ytf_frames_68.csv --images $(KP_FRAMES)/frames \
	        --output runs/weights-landmarks68/$${m%%:*} $(LM68_RECIPE) $$(echo $${m#*:} | tr , ' ') --weights-dtype float16 --no-evaluate || exit 1; \
	done
	$(PY) -m facepipe ensemble $(foreach m,$(LM68_MEMBERS),runs/weights-landmarks68/$(firstword $(subst :, ,$(m)))/keypoints/model) \
	    --output runs/weights-landmarks68/model --weights-dtype int8
	cp runs/weights-landmarks68/model/weights.pt runs/weights-landmarks68/model/meta.json facepipe/weights/landmarks68/
	$(PY) jobs/evaluate.py --model facepipe/weights/landmarks68 --data $(KP_FRAMES)/ytf_frames_68.csv --images $(KP_FRAMES)/frames \
	    --output runs/weights-landmarks68/eval --no-tta
	$(PY) bench/keypoints_in_the_wild.py --landmarks 68

# Rebuild the shipped emotion model (facepipe/weights/emotion) from FER2013 in ../shared: two
# networks of 90 epochs on random 40-px crops, one of them also with +-20% zoom (the Haar box's size
# scatter), about 48 and 56 minutes on 2 cores (run nothing else beside them), averaged into one
# model directory. The model card states what this gave.
FER := $(SHARED)/fer2013/fer2013_trainval.csv.gz
EM_RECIPE ?= --epochs 90 --erase 0.25 --crop 40
# One word per network: its run directory, a colon, then its own jobs/train.py flags joined by commas.
EM_MEMBERS ?= s7:--seed=7 s8:--seed=8,--scale=0.2
weights-emotion: $(STAMP)
	rm -rf runs/weights-emotion
	for m in $(EM_MEMBERS); do \
	    $(PY) jobs/train.py --task emotion --data $(FER) --output runs/weights-emotion/$${m%%:*} $(EM_RECIPE) $$(echo $${m#*:} | tr , ' ') --weights-dtype float16 --no-evaluate || exit 1; \
	done
	$(PY) -m facepipe ensemble $(foreach m,$(EM_MEMBERS),runs/weights-emotion/$(firstword $(subst :, ,$(m)))/emotion/model) --output runs/weights-emotion/model
	$(PY) jobs/evaluate.py --model runs/weights-emotion/model --data $(FER) --split PublicTest --output runs/weights-emotion/eval --tta crops
	cp runs/weights-emotion/model/weights.pt runs/weights-emotion/model/meta.json runs/weights-emotion/eval/confusion_matrix.png facepipe/weights/emotion/
	$(PY) jobs/evaluate.py --model facepipe/weights/emotion --data $(FER) --split PublicTest --output runs/weights-emotion/eval-none --no-tta

# Rebuild the 3-D mean face head pose is solved against (facepipe/faces/mean_face.json) from the
# 68-point labels in ../shared, and report its fit (bench/results/mean_face.md); a few seconds.
mean-face: $(STAMP)
	$(PY) bench/mean_face.py --labels $(KP_FRAMES)/ytf_frames_68.csv --write facepipe/faces/mean_face.json
