# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-demo bench weights-keypoints weights-emotion

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

test: $(STAMP)
	$(PY) -m pytest -q tests

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

# Rebuild the shipped emotion model (facepipe/weights/emotion) from FER2013 in ../shared: about 98
# minutes on 2 cores (run nothing else beside it). The model card states what this gave.
FER := $(SHARED)/fer2013/fer2013_trainval.csv.gz
EM_RECIPE ?= --epochs 110 --erase 0.25
weights-emotion: $(STAMP)
	rm -rf runs/weights-emotion
	$(PY) jobs/train.py --task emotion --data $(FER) --output runs/weights-emotion $(EM_RECIPE) --weights-dtype float16
	cp runs/weights-emotion/emotion/model/weights.pt runs/weights-emotion/emotion/model/meta.json runs/weights-emotion/emotion/eval/confusion_matrix.png facepipe/weights/emotion/
	$(PY) jobs/evaluate.py --model facepipe/weights/emotion --data $(FER) --split PublicTest --output runs/weights-emotion/eval-crops --tta crops
