{#- Consistency over time (WHO Data Quality Review): every complete year's total per source,
    data element and org unit against the mean of up to three earlier complete years. -#}
select * from {{ ref('int_data_quality_consistency') }}
