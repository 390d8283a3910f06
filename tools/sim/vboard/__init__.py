from tools.sim.vboard.air import Air
from tools.sim.vboard.board import Advert, BoardCrashed, VirtualBoard, node_available

__all__ = ["Air", "Advert", "BoardCrashed", "VirtualBoard", "node_available"]
