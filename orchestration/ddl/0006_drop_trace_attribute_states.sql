-- 0002's argMax-state table, replaced by trace_attributes_ranked (0005 copied its contents).
DROP TABLE IF EXISTS {{ db }}.trace_attributes {{ on_cluster }} SYNC;
