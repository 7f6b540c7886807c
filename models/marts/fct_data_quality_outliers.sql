{#- Data values flagged by at least one outlier method (WHO Data Quality Review), with the
    statistics of their series and which method fired. Every value screened, flagged or not,
    is in intermediate.int_data_quality_outliers. -#}
select * from {{ ref('int_data_quality_outliers') }}
where is_outlier
