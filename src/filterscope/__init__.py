from .zoo import *
