"""RCC detection on top of any trained nnU-Net model, the workflow behind ``nnunet-ext detect``
(``nnunet_ext.detection.workflow``)."""
