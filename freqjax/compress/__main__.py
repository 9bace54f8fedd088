"""``python -m freqjax.compress --model NAME ...``: compress a whole network (:mod:`freqjax.compress.cli`)."""

from freqjax.compress.cli import main

if __name__ == "__main__":
    main()
