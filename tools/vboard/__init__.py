from tools.vboard.board import VirtualBoard, Advert, BoardCrashed, node_available
from tools.vboard.air import Air
