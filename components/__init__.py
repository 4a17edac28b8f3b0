"""TrickFlow's stages (ingest, validate, train, evaluate) and what they share.

Importing any of them masks credentials in every log record the process makes from then on
(components.masking): a credential in an argument list or an error message never reaches a log.
"""

from components import masking

masking.install()
