#syntax=foobar
from alpine