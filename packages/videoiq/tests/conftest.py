import sys
from pathlib import Path

# the tests import their helper module (original_reference.py) from this folder
sys.path.insert(0, str(Path(__file__).parent))
