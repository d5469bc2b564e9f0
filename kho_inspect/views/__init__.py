# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Views
-----

The ``kho_inspect.views`` package turns model data into
:class:`~kho_inspect.render.Section` lists for text and Markdown output: one
module per report, plain data in, no drgn and no file access. The CLI passes
them to :func:`kho_inspect.render.emit`.
"""
